"""The step kernel: claim a run, take one step (a model call or a tool call), commit it.

stepping (claim, commit, park), model_step and tool_step (what a step records), leases
(the heartbeat), limits (budgets), exposure (the policy's facts and sums), verification.
"""
