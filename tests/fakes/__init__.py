"""Test doubles for the services the gateway talks to."""
