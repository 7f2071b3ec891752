# Smoke test of `doit verify` for the OS-only images: the function that smoke/provided/bootstrap runs.
# $1 is the event; the bootstrap exports the request id and function ARN of the invocation.
handler() {
  context=false
  case "$LAMBDA_REQUEST_ID:$LAMBDA_FUNCTION_ARN" in
    ?*:arn:aws:lambda:*) context=true ;;
  esac
  printf '{"echo": %s, "language": "provided", "context": %s}\n' "$1" "$context"
}
