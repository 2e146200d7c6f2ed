"""Deployment artefacts: the Kustomize base and its offline renderer."""
