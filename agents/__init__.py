"""Agents: scripted (oracles, customer simulators, negotiation strategies) and LLM agents.

Importing this package registers the built-in agents.
"""
