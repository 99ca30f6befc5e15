"""What the gateway keeps of a Space's reply: never the prompt it sent, never past the budget.

A Space answers with the text so far (``generating``) and the whole text (``complete``). Some
apps repeat the prompt before the answer (text generation returns the full text unless told
not to): that prompt, the gateway's system prompt and template in it, is removed. An app that
takes no token budget is cut at ``max_new_tokens`` by the gateway's own estimate, the one its
usage reports, and the upstream call is stopped there; one that takes it and ignores it meets
the gateway's bound for every upstream (``proxy/core/budget.py``).
"""

from __future__ import annotations

from msgspec import Struct

from proxy.core.budget import budget_chars, cut_at_budget
from proxy.core.generation import GenerationRequest

# A chat message shorter than this may begin a reply by chance ("Hello" -> "Hello! ..."):
# only longer ones, and every templated prompt, count as an echo.
MIN_ECHO_CHARS = 40


class Shown(Struct, frozen=True):
    """The reply text as the client gets it so far, and whether the budget cut it."""

    text: str
    cut: bool = False


class ReplyFilter:
    """Turns a Space's text so far into the text the client gets (call ``view`` with each)."""

    def __init__(self, sent: str, req: GenerationRequest, *, budget_taken: bool, templated: bool):
        self._echo = sent if (templated or len(sent) >= MIN_ECHO_CHARS) and sent.strip() else ""
        # An endpoint that takes the budget is trusted with it (the gateway's own bound, at
        # twice the budget, still holds: budget.py); one that does not is cut at the budget.
        self.limit = budget_chars(req) if budget_taken else budget_chars(req, margin=1)

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
