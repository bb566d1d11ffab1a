"""Code that any app may use and that imports no app: the condition
evaluator and template context, screening and the redacting log filter,
SVG charts, Standard Webhooks signing and Retry-After parsing.

An import-linter contract keeps it that way (see `.importlinter`).
"""
