"""The demo, live and offline evaluation, and the public datasets they read."""
