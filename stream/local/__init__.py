"""Everything on one machine: the local broker and Redis, child processes."""
