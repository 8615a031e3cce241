"""Faust apps, agents and the ``streamwise`` command line."""
