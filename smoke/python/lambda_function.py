"""Smoke test of `doit verify` for the python images: echo the event, name the language, check the context."""


def handler(event, context):
    return {
        "echo": event,
        "language": "python",
        "context": bool(context.aws_request_id and context.invoked_function_arn.startswith("arn:aws:lambda:")),
    }
