"""Agent roles, policies, rubrics and limits live here.

This release ships the four role groups (a data migration); the versioned
policy models arrive with the guardrails work.
"""
