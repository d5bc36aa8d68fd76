"""Operator commands against a running deployment: replay, rebuild, promote, rollback."""
