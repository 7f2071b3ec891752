// Smoke test of `doit verify` for the nodejs images: echo the event, name the language, check the context.
exports.handler = async (event, context) => ({
  echo: event,
  language: "nodejs",
  context: Boolean(context.awsRequestId && context.invokedFunctionArn.startsWith("arn:aws:lambda:")),
});
