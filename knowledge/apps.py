from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    verbose_name = "Knowledge graph"

    def ready(self) -> None:
        from knowledge.keys import check_registry

        check_registry()  # a bad BOSUN_ENTITY_KEYS path fails at start-up, not at a write
