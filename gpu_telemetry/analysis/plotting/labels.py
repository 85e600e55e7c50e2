"""Text as matplotlib shows it."""


def mpl_text(text: str) -> str:
    """Matplotlib reads $...$ as mathtext: a title, memo or tag is shown as typed."""
    return text.replace("$", r"\$")
