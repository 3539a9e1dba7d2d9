"""Drives the official Anthropic Python SDK against a relay.

Reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY, makes one JSON call, one
streamed call, one count_tokens call and one models.list call, checks what
the SDK parsed, and prints a JSON report on stdout for the test to assert.
"""

import json
import sys

import anthropic

MODEL = "claude-sonnet-4-5-20250929"


def main() -> int:
    client = anthropic.Anthropic(max_retries=0)
    messages = [{"role": "user", "content": "Say hi"}]

    created = client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    assert created.type == "message", created
    assert created.content and created.content[0].type == "text", created

    text = []
    with client.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
        for chunk in stream.text_stream:
            text.append(chunk)
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn", final

    counted = client.messages.count_tokens(model=MODEL, messages=messages)
    models = client.models.list()
    ids = [model.id for model in models.data]
    assert all(model.type == "model" for model in models.data), models

    report = {
        "sdk_version": anthropic.__version__,
        "create": {
            "stop_reason": created.stop_reason,
            "input_tokens": created.usage.input_tokens,
            "output_tokens": created.usage.output_tokens,
        },
        "stream": {"text": "".join(text), "output_tokens": final.usage.output_tokens},
        "count_tokens": {"input_tokens": counted.input_tokens},
        "models": {"ids": ids},
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
