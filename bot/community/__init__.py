"""The community's rules: what a submitted joke meets (validation, near-duplicates, content
policy, moderation), rate limits, imports and the starter corpus.

Imports only `store`, `settings` and `model/contracts`; nothing of Discord, so each rule is
testable on its own. Used by `runners`, `training`, `services`, the Discord face and the CLI.
"""
