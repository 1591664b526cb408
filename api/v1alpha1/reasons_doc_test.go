package v1alpha1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Every reason a user can read in status, reports or Events is part of the
// API: docs/usage.md must list each one, so that a reason added without
// documentation fails here.
func TestEveryReasonIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/usage.md")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "condition_consts.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	reasons := 0
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasSuffix(name.Name, "Reason") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Errorf("%s is not a string literal", name.Name)
					continue
				}
				reason, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				reasons++
				if !strings.Contains(string(doc), "`"+reason+"`") {
					t.Errorf("docs/usage.md does not list the reason `%s` (%s)", reason, name.Name)
				}
			}
		}
	}
	if reasons < 10 {
		t.Fatalf("found only %d reasons in condition_consts.go: the parse is wrong", reasons)
	}
}
