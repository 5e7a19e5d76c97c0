"""The web console: static pages under ``/ui`` and their JSON endpoints under ``/ui/api``."""
