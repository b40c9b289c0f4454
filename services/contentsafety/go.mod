module github.com/terroir-ai/terroir/services/contentsafety

go 1.26

require github.com/terroir-ai/terroir/pkg v0.0.0

replace github.com/terroir-ai/terroir/pkg => ../../pkg
