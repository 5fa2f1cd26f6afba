package storetest

import (
	"testing"

	"buildlog"
)

// Run runs the conformance suite against stores made by newStore, which
// returns a fresh, empty store for each subtest and registers its own
// cleanup. Subtests run in parallel (t.Parallel), so the stores a factory
// hands out must be independent of each other: a directory, a schema or a
// database of their own. Sections that only some stores have (CommitWatcher)
// skip for the others.
func Run(t *testing.T, newStore func(t *testing.T) buildlog.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s buildlog.Store)
	}{
		{"CreateBuild", testCreateBuild},
		{"Builds", testBuilds},
		{"BuildsPaging", testBuildsPaging},
		{"LatestBuild", testLatestBuild},
		{"Append", testAppend},
		{"AppendErrors", testAppendErrors},
		{"AppendRetry", testAppendRetry},
		{"Finish", testFinish},
		{"FinishStatuses", testFinishStatuses},
		{"FinishAgain", testFinishAgain},
		{"FinishQueued", testFinishQueued},
		{"FinishIdle", testFinishIdle},
		{"ReadLog", testReadLog},
		{"ReadLogPaging", testReadLogPaging},
		{"ReadLogBounds", testReadLogBounds},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ConcurrentBuilds", testConcurrentBuilds},
		{"FinishRacesAppends", testFinishRacesAppends},
		{"Fleet", testFleet},
		{"GroupDuplicates", testGroupDuplicates},
		{"GroupSealed", testGroupSealed},
		{"AppendGuards", testAppendGuards},
		{"AppendCancelled", testAppendCancelled},
		{"IdleBuilds", testIdleBuilds},
		{"ActivityGranularity", testActivityGranularity},
		{"DeleteFinished", testDeleteFinished},
		{"Keys", testKeys},
		{"Webhooks", testWebhooks},
		{"WebhookEvents", testWebhookEvents},
		{"WebhookEventOrder", testWebhookEventOrder},
		{"ClaimDeliveries", testClaimDeliveries},
		{"RecordDelivery", testRecordDelivery},
		{"PruneDeliveryAttempts", testPruneDeliveryAttempts},
		{"ConcurrentClaims", testConcurrentClaims},
		{"Secret", testSecret},
		{"Ping", testPing},
		{"CommitWatcher", testCommitWatcher},
	}
	tests = append(tests, storageTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}
