"""Agent definitions: what an agent is (tools, input, subject, facts) and their registry."""
