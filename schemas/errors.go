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

// Reasons lists every rejection code the schema checks give (the dead-letter
// reason header, imstream_rejected_records_total's reason label).
var Reasons = []string{ReasonOversize, ReasonInvalidJSON, ReasonWrongType, ReasonRequired, ReasonInvalid,
	ReasonUnknownType, ReasonVersion, ReasonWrongKind, ReasonKeyMismatch}

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

// positive checks that the field prefix.field is > 0; the path is built
// only on failure (valid records are the hot path).
func positive(prefix, field string, v int64) *Error {
	if v > 0 {
		return nil
	}
	path := prefix + "." + field
	if v == 0 {
		return required(path)
	}
	return fieldErr(path, ReasonInvalid, "must be > 0")
}
