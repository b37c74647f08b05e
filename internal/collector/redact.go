package collector

import (
	"net/url"
	"strings"
)

// redacted replaces a credential in a label value. It is the placeholder
// net/url's URL.Redacted uses for passwords, so users meet one spelling.
const redacted = "xxxxx"

// redactURL removes credentials from a URL before it becomes a label value:
// user info (a password, or on http(s) a bare user name, which is how Git
// hosting tokens are written: https://<token>@host/...), every query value
// (S3 and Azure SAS signatures, ?token=...) and the fragment. Scheme, host,
// port, path and query keys stay, so the label still says where the source
// is. Flux's URL fields may lack a scheme (Bucket spec.endpoint "host:port",
// ImageRepository spec.image); those are read as an authority and path.
// A value that cannot be parsed is replaced whole: it cannot be shown safe.
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	raw := s
	schemeless := !strings.Contains(s, "://")
	if schemeless {
		raw = "//" + s
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redacted
	}
	changed := false
	if u.User != nil {
		_, hasPassword := u.User.Password()
		switch {
		case hasPassword:
			u.User = url.UserPassword(u.User.Username(), redacted)
		case u.Scheme == "ssh":
			// ssh://git@host: the key is the credential, the user is not.
		default:
			u.User = url.User(redacted)
		}
		changed = true
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			for i := range vs {
				vs[i] = redacted
			}
			q[k] = vs
		}
		u.RawQuery = q.Encode()
		changed = true
	}
	if u.Fragment != "" || u.RawFragment != "" {
		u.Fragment, u.RawFragment = redacted, ""
		changed = true
	}
	if !changed {
		return s // keep the object's own spelling
	}
	out := u.String()
	if schemeless {
		out = strings.TrimPrefix(out, "//")
	}
	return out
}

// redactPath keeps the first segment of a secret URL path, such as a
// Receiver's /hook/<sha256>, whose remainder is the credential.
func redactPath(p string) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return "/" + first + "/" + redacted
}
