// The check that stored reference log-probs were computed under this run's numerics: when the
// policy is the reference model, the file must hold what the policy computes now.
#pragma once
#include <cstdint>
#include <vector>

#include "dpo/config/config.h"
#include "dpo/data/preference_data.h"
#include "dpo/model/model.h"
#include "dpo/reference/reference_store.h"

namespace dpo {

class Communicator;

// When model.policy is model.reference (the same directory, or weights whose fingerprint is the
// file's), scores `micro_batch` of `train` with `policy` and compares with `store`. A difference
// means the file was made under other numerics (dtype, device, kernels): worth a loud warning on
// stderr (rank 0), not a refusal, since the run is still a valid DPO run against those values.
// Every rank calls this (collectives); a rank may pass an empty micro-batch.
void warn_if_stored_reference_differs(const Config& config, const ReferenceStore& store, CausalLMImpl& policy,
                                      const PreferenceDataset& train, const std::vector<int64_t>& micro_batch,
                                      Communicator& communicator);

}  // namespace dpo
