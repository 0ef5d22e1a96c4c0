"""The executive dashboard (Streamlit): ``capacity dashboard`` runs ``app.py``."""
