# Smoke test of `doit verify` for the ruby images: echo the event, name the language, check the context.
def handler(event:, context:)
  {
    'echo' => event,
    'language' => 'ruby',
    'context' => !context.aws_request_id.to_s.empty? && context.invoked_function_arn.to_s.start_with?('arn:aws:lambda:')
  }
end
