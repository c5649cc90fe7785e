"""Generation servers over HTTP, through ``huggingface_hub.AsyncInferenceClient``.

- :class:`TgiBackend`: TGI's native token stream (``text_generation(stream=True,
  details=True)``), with a LoRA adapter chosen per request (``adapter_id``).
  TGI takes a prompt string, so the chat template is applied here, with the
  served model's own tokenizer.
- :class:`OpenAIBackend`: any OpenAI-compatible server's ``/v1/chat/completions``
  (vLLM, SGLang, TGI's Messages API) through ``chat_completion(stream=True)``.

Message contents are outside text: both backends break the common families'
control tokens in them, and the TGI prompt also the served tokenizer's own
specials (llm/control_tokens.py), so that only the chat template marks turns.

A client is made per request and closed with it: ``AsyncInferenceClient`` keeps
every streamed response on an exit stack until the client closes, so one
long-lived client would hold on to every answer it ever streamed.

Errors: nothing received yet and the server unreachable, refusing or slow to
answer -> :class:`BackendUnavailable`, retried up to ``retries`` times (a stream
that has started is never retried: its tokens are already on their way to the
user); anything else -> :class:`BackendFailed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from huggingface_hub import AsyncInferenceClient, ChatCompletionInputStreamOptions
from huggingface_hub.errors import (
    HfHubHTTPError,
    InferenceTimeoutError,
    OverloadedError,
    TextGenerationError,
)

from llm.backend import ChatMessage, Event, Finish, Piece, Sampling
from llm.control_tokens import neutralise_messages, special_tokens
from llm.errors import BackendError, BackendFailed, BackendUnavailable
from schemas.redact import without_credentials

PromptFormat = Callable[[list[ChatMessage]], str]
# Statuses that mean "not now" rather than "never": worth another try before the first token.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_BACKOFF_S = 0.25


def plain_prompt(messages: list[ChatMessage]) -> str:
    """For a model without a chat template: role-labelled turns, then the answer's label."""
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + (
        "Assistant:"
    )


def chat_template_prompt(tokenizer_source: str) -> PromptFormat:
    """The served model's own chat template (a model id or a local tokenizer directory)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_source, local_files_only=Path(tokenizer_source).is_dir()
    )
    if not getattr(tokenizer, "chat_template", None):
        return plain_prompt
    specials = special_tokens(tokenizer)

    def render(messages: list[ChatMessage]) -> str:
        # TGI parses specials anywhere in the prompt string: the contents hold none.
        text = tokenizer.apply_chat_template(
            [
                {"role": m["role"], "content": m["content"]}
                for m in neutralise_messages(messages, specials)
            ],
            add_generation_prompt=True,
            tokenize=False,
        )
        return str(text)

    return render


def _classify(error: BaseException, server: str) -> BackendError:
    """The one error boundary: transport failures to our hierarchy, never leaking headers.

    The messages name the server without any credentials its URL carries.
    """
    if isinstance(error, BackendError):
        return error
    url = without_credentials(server)
    if isinstance(error, InferenceTimeoutError | httpx.TimeoutException):
        return BackendUnavailable(f"{url} did not answer in time")
    if isinstance(error, httpx.TransportError):
        return BackendUnavailable(f"{url} is unreachable: {type(error).__name__}")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        if status in _RETRYABLE_STATUS:
            return BackendUnavailable(f"{url} answered HTTP {status}")
        return BackendFailed(f"{url} answered HTTP {status}: {_first_line(error)}")
    if isinstance(error, OverloadedError):  # TGI at its concurrency limit: "not now"
        return BackendUnavailable(f"{url} is overloaded")
    if isinstance(error, TextGenerationError):
        return BackendFailed(f"generation failed on {url}: {_first_line(error)}")
    return BackendFailed(
        without_credentials(f"generation failed on {url}: {type(error).__name__}: {error}")
    )


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__


class _HttpBackend:
    name = "http"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 2,
        count: Callable[[str], int] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._retries = retries
        self._count = count

    def count_tokens(self, text: str) -> int:
        # Without the served model's tokenizer: ~4 characters a token in English.
        return self._count(text) if self._count else max(1, len(text) // 4)

    def _client(self, base_url: str) -> AsyncInferenceClient:
        return AsyncInferenceClient(
            base_url=base_url, api_key=self._api_key, timeout=self._timeout_s
        )

    async def aclose(self) -> None:
        return None

    async def ready(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s) as client:
                response = await client.get(f"{self.url}/health")
        except httpx.HTTPError as error:
            raise _classify(error, self.url) from error
        if response.status_code >= 500:
            shown = without_credentials(self.url)
            raise BackendUnavailable(f"{shown}/health answered HTTP {response.status_code}")

    async def _with_retries(
        self, start: Callable[[AsyncInferenceClient], Any], base_url: str
    ) -> AsyncIterator[Any]:
        """Open the stream, retrying while nothing has been received; then pass it through."""
        attempt = 0
        while True:
            async with self._client(base_url) as client:
                received = False
                try:
                    stream = await start(client)
                    async for item in stream:
                        received = True
                        yield item
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as failure:  # the error boundary: everything is classified
                    error = _classify(failure, self.url)
                    if received:  # tokens went out: a broken-off answer, never retried
                        raise BackendFailed(
                            f"{self.url} broke off the stream: {error}"
                        ) from failure
                    if not isinstance(error, BackendUnavailable):
                        raise error from failure
                    if attempt >= self._retries:
                        raise error from failure
            attempt += 1
            await asyncio.sleep(_BACKOFF_S * 2 ** (attempt - 1))


class TgiBackend(_HttpBackend):
    name = "tgi"

    def __init__(
        self,
        url: str,
        *,
        prompt_format: PromptFormat = plain_prompt,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 2,
        count: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__(url, api_key=api_key, timeout_s=timeout_s, retries=retries, count=count)
        self._format = prompt_format

    async def stream(
        self, messages: list[ChatMessage], sampling: Sampling, *, adapter: str | None = None
    ) -> AsyncIterator[Event]:
        prompt = self._format(neutralise_messages(messages))
        options: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "adapter_id": adapter,
            "seed": sampling.seed,
            # TGI's own option; it has no no-repeat n-gram size. None: the server's default.
            "repetition_penalty": sampling.repetition_penalty,
        }
        if sampling.temperature > 0:
            options |= {
                "do_sample": True,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p if sampling.top_p < 1.0 else None,
            }

        async def start(client: AsyncInferenceClient) -> Any:
            return await client.text_generation(prompt, stream=True, details=True, **options)

        completion = 0
        async for output in self._with_retries(start, self.url):
            token = output.token
            completion += 1
            if not token.special and token.text:
                yield Piece(token.text)
            if output.details is not None:
                yield Finish(
                    self.count_tokens(prompt),
                    output.details.generated_tokens,
                    "length" if output.details.finish_reason == "length" else "stop",
                )
                return
        yield Finish(self.count_tokens(prompt), completion, "stop")


class OpenAIBackend(_HttpBackend):
    name = "openai"

    def __init__(
        self,
        url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 2,
        count: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__(url, api_key=api_key, timeout_s=timeout_s, retries=retries, count=count)
        self.model = model

    async def stream(
        self, messages: list[ChatMessage], sampling: Sampling, *, adapter: str | None = None
    ) -> AsyncIterator[Event]:
        # vLLM and SGLang serve a LoRA adapter under its own model name.
        model = adapter or self.model
        # The server applies its chat template to these contents.
        contents = neutralise_messages(messages)

        async def start(client: AsyncInferenceClient) -> Any:
            return await client.chat_completion(
                [dict(m) for m in contents],
                model=model,
                stream=True,
                stream_options=ChatCompletionInputStreamOptions(include_usage=True),
                max_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                seed=sampling.seed,
                # vLLM's and SGLang's sampling options beyond OpenAI's, sent only when asked.
                extra_body=_extra(sampling),
            )

        pieces = 0
        reason = "stop"
        usage = None
        async for chunk in self._with_retries(start, self.url):
            for choice in chunk.choices or []:
                if choice.delta is not None and choice.delta.content:
                    pieces += 1
                    yield Piece(choice.delta.content)
                if choice.finish_reason:
                    reason = "length" if choice.finish_reason == "length" else "stop"
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
        if usage is not None:
            yield Finish(usage.prompt_tokens, usage.completion_tokens, reason)
        else:
            prompt = sum(self.count_tokens(m["content"]) for m in messages)
            yield Finish(prompt, pieces, reason)


def _extra(sampling: Sampling) -> dict[str, Any] | None:
    """The repetition penalty a request asked for, in vLLM's name; None when it asked none.

    vLLM has no no-repeat n-gram size: that option is the local model's alone.
    """
    if sampling.repetition_penalty is None:
        return None
    return {"repetition_penalty": sampling.repetition_penalty}
