"""One thin module per verb; Hydra mains live here."""
