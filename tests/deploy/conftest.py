"""Deployment artefacts read as an operator's tools would read them (YAML, shell, the image)."""
