"""Bundled example agents and the demo backends their tools act on."""
