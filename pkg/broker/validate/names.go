package validate

import (
	"regexp"
	"strings"
)

// Kubernetes name rules, kept here so the broker needs no apimachinery.
var (
	dns1123Label  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1035Label  = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	qualifiedPart = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	labelValue    = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

func isDNS1123Label(s string) []string {
	var errs []string
	if len(s) > 63 {
		errs = append(errs, "must be no more than 63 characters")
	}
	if !dns1123Label.MatchString(s) {
		errs = append(errs, "must consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character")
	}
	return errs
}

func isDNS1035Label(s string) []string {
	var errs []string
	if len(s) > 63 {
		errs = append(errs, "must be no more than 63 characters")
	}
	if !dns1035Label.MatchString(s) {
		errs = append(errs, "must consist of lower case alphanumeric characters or '-', start with a letter and end with an alphanumeric character")
	}
	return errs
}

func isDNS1123Subdomain(s string) []string {
	if len(s) > 253 {
		return []string{"must be no more than 253 characters"}
	}
	for _, l := range strings.Split(s, ".") {
		if !dns1123Label.MatchString(l) || len(l) > 63 {
			return []string{"must be dot-separated RFC 1123 labels (lower case alphanumeric or '-')"}
		}
	}
	return nil
}

func isQualifiedName(s string) []string {
	name := s
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		prefix := s[:i]
		name = s[i+1:]
		if prefix == "" {
			return []string{"prefix part must be non-empty"}
		}
		if errs := isDNS1123Subdomain(prefix); errs != nil {
			return []string{"prefix part " + errs[0]}
		}
	}
	if name == "" || len(name) > 63 || !qualifiedPart.MatchString(name) {
		return []string{"name part must be 1-63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"}
	}
	return nil
}

func isValidLabelValue(s string) []string {
	if len(s) > 63 || !labelValue.MatchString(s) {
		return []string{"must be 63 characters or less, alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric character"}
	}
	return nil
}
