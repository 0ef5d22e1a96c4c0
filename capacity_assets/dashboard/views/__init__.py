"""One module per dashboard tab; ``app.py`` opens the one the visitor chose."""
