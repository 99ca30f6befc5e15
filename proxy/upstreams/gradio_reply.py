"""What the gateway keeps of a Space's reply: never the prompt it sent, never past the budget.

A Space answers with the text so far (``generating``) and the whole text (``complete``). Some
apps repeat the prompt before the answer (text generation returns the full text unless told
not to): that prompt, the gateway's system prompt and template in it, is removed. An app that
takes no token budget (or ignores it) is cut at ``max_new_tokens`` by the gateway's own
estimate, the one its usage reports, and the upstream call is stopped there.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.generation import CHARS_PER_TOKEN

# An endpoint that takes the budget is trusted with it: the gateway cuts only what is plainly
# past it (twice the budget, by an estimate that may undercount long words).
IGNORED_BUDGET_FACTOR = 2
# A chat message shorter than this may begin a reply by chance ("Hello" -> "Hello! ..."):
# only longer ones, and every templated prompt, count as an echo.
MIN_ECHO_CHARS = 40


@dataclass(frozen=True, slots=True)
class Shown:
    """The reply text as the client gets it so far, and whether the budget cut it."""

    text: str
    cut: bool = False


class ReplyFilter:
    """Turns a Space's text so far into the text the client gets (call ``view`` with each)."""

    def __init__(self, sent: str, *, max_new_tokens: int, budget_taken: bool, templated: bool):
        self._echo = sent if (templated or len(sent) >= MIN_ECHO_CHARS) and sent.strip() else ""
        factor = IGNORED_BUDGET_FACTOR if budget_taken else 1
        self.limit = max_new_tokens * CHARS_PER_TOKEN * factor

    def view(self, text: str, *, final: bool) -> Shown:
        echo = self._echo
        if echo:
            if text.startswith(echo):
                text = text[len(echo) :].lstrip()
            elif not final and echo.startswith(text):
                return Shown("")  # it may still be repeating the prompt: nothing yet
            else:
                found = text.find(echo)  # after a BOS or whitespace of its own
                if found >= 0 and not text[:found].strip(" <s>\n"):
                    text = text[found + len(echo) :].lstrip()
        if len(text) <= self.limit:
            return Shown(text)
        return Shown(cut_at_budget(text, self.limit), cut=True)


def cut_at_budget(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at the last word boundary when one is in
    the second half (a word is not split when it can be avoided)."""
    head = text[:limit]
    boundary = max(head.rfind(" "), head.rfind("\n"))
    return head[:boundary].rstrip() if boundary > limit // 2 else head
