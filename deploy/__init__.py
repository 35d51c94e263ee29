"""Deployment files and the tools that check them (deploy/compose-check)."""
