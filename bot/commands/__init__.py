"""Slash command groups: one module per audience (everyone, admins)."""
