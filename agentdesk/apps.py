from django.apps import AppConfig


class AgentdeskConfig(AppConfig):
    name = "agentdesk"
    verbose_name = "AgentDesk"

    def ready(self) -> None:
        from agents.registry import agents

        agents()  # fail at start-up on a bad AGENTDESK_AGENTS entry
