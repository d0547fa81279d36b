"""The policy: which proposed tool calls run, which wait for a person, which are refused."""
