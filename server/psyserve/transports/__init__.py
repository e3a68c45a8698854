"""Transports: thin adapters from wire protocols to psyserve.service.ExperimentService."""
