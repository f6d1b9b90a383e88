"""Shared building blocks of the CIC services: events, bus, settings, database, loops."""
