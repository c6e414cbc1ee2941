"""dlcourse: the shared training core of the course.

Modules (import the one you need; nothing heavy is imported here):
``device``, ``config``, ``data``, ``train``, ``callbacks``, ``checkpoint``,
``metrics``, ``gan``, ``plot``, ``check``, ``grade``.
"""

__version__ = "0.1.0"
