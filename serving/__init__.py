"""Query serving (FastAPI). Never imports Dagster."""
