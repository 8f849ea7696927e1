"""Simulators: the world atomlab acts on when no real instrument or swarm is attached."""
