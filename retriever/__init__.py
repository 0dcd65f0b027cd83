"""Retriever: encoders, FAISS index, search and selection, training and evaluation."""
