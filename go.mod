module gowsgi

go 1.26
