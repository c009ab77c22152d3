"""Shared test helpers, in one place: test modules import helpers from here only."""
