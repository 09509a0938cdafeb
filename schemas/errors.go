package schemas

// Reason codes of a rejected record. They label the rejection metrics and
// are the prefix of the dead-letter "reason" header.
const (
	ReasonOversize    = "oversize"
	ReasonInvalidJSON = "invalid_json"
	ReasonWrongType   = "wrong_type"
	ReasonRequired    = "required"
	ReasonInvalid     = "invalid_value"
	ReasonUnknownType = "unknown_type"
	ReasonVersion     = "unsupported_version"
	ReasonWrongKind   = "wrong_topic"
)

// Error is a validation error: Path names the field ("publish.msg.cmd"),
// Reason is one of the Reason* codes and Detail says what was wrong.
type Error struct {
	Path   string
	Reason string
	Detail string
}

func (e *Error) Error() string { return e.Path + ": " + e.Detail }

func fieldErr(path, reason, detail string) *Error {
	return &Error{Path: path, Reason: reason, Detail: detail}
}

func required(path string) *Error { return fieldErr(path, ReasonRequired, "required") }

func positive(path string, v int64) *Error {
	if v == 0 {
		return required(path)
	}
	if v < 0 {
		return fieldErr(path, ReasonInvalid, "must be > 0")
	}
	return nil
}
