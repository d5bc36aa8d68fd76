"""Pure ML: plain interaction types, vocabularies, recommender, trainer (numpy + torch only)."""
