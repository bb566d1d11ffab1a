"""The knowledge graph (entities, typed events, relations) lives here."""
