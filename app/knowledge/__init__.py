"""The knowledge base OCTI answers from: stores, ingestion, retrieval for calls."""
