"""Data the sample workflows and the demo are built from."""
