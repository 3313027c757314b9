"""Evaluation: metrics, STS, retrieval, reports."""
