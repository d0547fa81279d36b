"""The example support agent and its demo shop, Kettle & Leaf.

The shop's backend (customers, orders, the refunds ledger, outgoing replies) lives in this
app's models; the agent's tools act on it with at-most-once semantics. See
docs/example-agent.md.
"""
