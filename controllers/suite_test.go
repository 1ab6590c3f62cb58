package controllers

import (
	"testing"

	"github.com/md-platform/paytoview-operator/internal/testenv"
)

var testEnv *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &testEnv) }
