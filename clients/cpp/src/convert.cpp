// Conversions between psyserve.v1 protobuf messages and the public C++ types of psyserve/client.h.
// Holds no state and makes no calls; client.cpp does the calling.
#include "internal.h"

namespace psyserve::internal {

void to_pb(const Value& value, pb::ParameterValue* out, const std::string& field) {
  switch (value.kind()) {
    case Value::Kind::kNumber: out->set_number(value.as_number()); return;
    case Value::Kind::kInteger: out->set_integer(value.as_integer()); return;
    case Value::Kind::kCategory: out->set_category(value.as_category()); return;
    case Value::Kind::kFlag: out->set_flag(value.as_flag()); return;
    case Value::Kind::kNone: break;
  }
  throw Error(StatusCode::kInvalidArgument, field + ": a value is required (number, integer, category or flag)", field);
}

Value from_pb(const pb::ParameterValue& value) {
  switch (value.kind_case()) {
    case pb::ParameterValue::kNumber: return Value::number(value.number());
    case pb::ParameterValue::kInteger: return Value::integer(value.integer());
    case pb::ParameterValue::kCategory: return Value::category(value.category());
    case pb::ParameterValue::kFlag: return Value::flag(value.flag());
    case pb::ParameterValue::KIND_NOT_SET: break;
  }
  return Value();
}

void to_pb(const Stimulus& stimulus, google::protobuf::Map<std::string, pb::ParameterValue>* out, const std::string& field) {
  for (const auto& [name, value] : stimulus) to_pb(value, &(*out)[name], field + "." + name);
}

Stimulus from_pb(const google::protobuf::Map<std::string, pb::ParameterValue>& values) {
  Stimulus stimulus;
  for (const auto& [name, value] : values) stimulus.emplace(name, from_pb(value));
  return stimulus;
}

namespace {

template <typename Map>
Metadata to_metadata(const Map& map) {
  return Metadata(map.begin(), map.end());
}

ParameterType from_pb(pb::ParameterType t) {
  switch (t) {
    case pb::PARAMETER_TYPE_CONTINUOUS: return ParameterType::kContinuous;
    case pb::PARAMETER_TYPE_INTEGER: return ParameterType::kInteger;
    case pb::PARAMETER_TYPE_BINARY: return ParameterType::kBinary;
    case pb::PARAMETER_TYPE_FIXED: return ParameterType::kFixed;
    case pb::PARAMETER_TYPE_CATEGORICAL: return ParameterType::kCategorical;
    default: return ParameterType::kUnspecified;
  }
}

OutcomeType from_pb(pb::OutcomeType t) {
  switch (t) {
    case pb::OUTCOME_TYPE_BINARY: return OutcomeType::kBinary;
    case pb::OUTCOME_TYPE_CONTINUOUS: return OutcomeType::kContinuous;
    case pb::OUTCOME_TYPE_ORDINAL: return OutcomeType::kOrdinal;
    default: return OutcomeType::kUnspecified;
  }
}

TrialState from_pb(pb::TrialState s) {
  switch (s) {
    case pb::TRIAL_STATE_PENDING: return TrialState::kPending;
    case pb::TRIAL_STATE_COMPLETED: return TrialState::kCompleted;
    case pb::TRIAL_STATE_FAILED: return TrialState::kFailed;
    case pb::TRIAL_STATE_ABANDONED: return TrialState::kAbandoned;
    default: return TrialState::kUnspecified;
  }
}

pb::QueryType to_pb(QueryType t) {
  switch (t) {
    case QueryType::kMax: return pb::QUERY_TYPE_MAX;
    case QueryType::kMin: return pb::QUERY_TYPE_MIN;
    case QueryType::kPrediction: return pb::QUERY_TYPE_PREDICTION;
    case QueryType::kInverse: return pb::QUERY_TYPE_INVERSE;
  }
  return pb::QUERY_TYPE_UNSPECIFIED;
}

QueryType from_pb(pb::QueryType t) {
  switch (t) {
    case pb::QUERY_TYPE_MIN: return QueryType::kMin;
    case pb::QUERY_TYPE_PREDICTION: return QueryType::kPrediction;
    case pb::QUERY_TYPE_INVERSE: return QueryType::kInverse;
    default: return QueryType::kMax;
  }
}

}  // namespace

pb::TrialState to_pb(TrialState state) {
  switch (state) {
    case TrialState::kPending: return pb::TRIAL_STATE_PENDING;
    case TrialState::kCompleted: return pb::TRIAL_STATE_COMPLETED;
    case TrialState::kFailed: return pb::TRIAL_STATE_FAILED;
    case TrialState::kAbandoned: return pb::TRIAL_STATE_ABANDONED;
    case TrialState::kUnspecified: break;
  }
  return pb::TRIAL_STATE_UNSPECIFIED;
}

Parameter from_pb(const pb::Parameter& p) {
  Parameter out;
  out.name = p.name();
  out.type = from_pb(p.type());
  out.lower_bound = p.lower_bound();
  out.upper_bound = p.upper_bound();
  out.log_scale = p.log_scale();
  out.choices.assign(p.choices().begin(), p.choices().end());
  if (p.has_fixed_value()) out.fixed_value = from_pb(p.fixed_value());
  return out;
}

Trial from_pb(const pb::Trial& t) {
  Trial out;
  out.trial_id = t.trial_id();
  for (const auto& s : t.stimuli()) out.stimuli.push_back(from_pb(s.values()));
  out.state = from_pb(t.state());
  out.phase_index = t.phase_index();
  out.phase_name = t.phase_name();
  for (const auto& o : t.outcomes()) {
    out.outcomes.push_back(Outcome{o.name(), o.value(), o.has_sem() ? std::optional<double>(o.sem()) : std::nullopt});
  }
  out.metadata = to_metadata(t.metadata());
  out.asked_at = t.asked_at();
  out.told_at = t.told_at();
  out.model_data = t.model_data();
  return out;
}

StrategySummary from_pb(const pb::StrategySummary& s) {
  StrategySummary out;
  out.strategy_id = s.strategy_id();
  out.name = s.name();
  out.metadata = to_metadata(s.metadata());
  for (const auto& p : s.phases()) {
    out.phases.push_back(Phase{p.index(), p.name(), p.generator(), p.model(), p.acqf(), p.asks(), p.finished()});
  }
  out.current_phase_index = s.current_phase_index();
  out.is_finished = s.is_finished();
  out.trials_asked = s.trials_asked();
  out.trials_completed = s.trials_completed();
  out.trials_pending = s.trials_pending();
  out.model_data_points = s.model_data_points();
  out.created_at = s.created_at();
  for (const auto& p : s.parameters()) out.parameters.push_back(from_pb(p));
  out.stimuli_per_trial = s.stimuli_per_trial();
  for (int t : s.outcome_types()) out.outcome_types.push_back(from_pb(static_cast<pb::OutcomeType>(t)));
  out.outcome_names.assign(s.outcome_names().begin(), s.outcome_names().end());
  return out;
}

ConfigureResult from_pb(const pb::ConfigureResponse& r) {
  ConfigureResult out;
  out.strategy_id = r.strategy_id();
  for (const auto& p : r.parameters()) out.parameters.push_back(from_pb(p));
  out.warnings.assign(r.warnings().begin(), r.warnings().end());
  out.summary = from_pb(r.summary());
  return out;
}

AskResult from_pb(const pb::AskResponse& r) {
  AskResult out;
  for (const auto& t : r.trials()) out.trials.push_back(from_pb(t));
  out.is_finished = r.is_finished();
  out.precomputed = r.precomputed();
  out.timings = Timings{r.timings().fit_seconds(), r.timings().generate_seconds(), r.timings().wait_seconds()};
  out.phase_index = r.phase_index();
  out.phase_name = r.phase_name();
  return out;
}

TellResult from_pb(const pb::TellResponse& r) {
  return TellResult{r.trial_id(), r.trials_recorded(), r.model_data_added(), r.duplicate(), r.trials_completed(),
                    r.is_finished()};
}

QueryResult from_pb(const pb::QueryResponse& r) {
  QueryResult out;
  out.type = from_pb(r.query_type());
  out.probability_space = r.probability_space();
  for (const auto& p : r.predictions()) {
    out.predictions.push_back(Prediction{from_pb(p.x().values()), p.mean(), p.variance(), p.probability(), p.lower(),
                                         p.upper(), {p.level_probabilities().begin(), p.level_probabilities().end()}});
  }
  out.fit_seconds = r.fit_seconds();
  out.outcome = r.outcome();
  return out;
}

InfoResult from_pb(const pb::InfoResponse& r) {
  InfoResult out;
  out.strategy_id = r.strategy_id();
  out.db_name = r.db_name();
  out.strat_count = r.strat_count();
  out.all_strat_names.assign(r.all_strat_names().begin(), r.all_strat_names().end());
  out.current_strat_index = r.current_strat_index();
  out.current_strat_name = r.current_strat_name();
  out.current_strat_data_pts = r.current_strat_data_pts();
  out.current_strat_model = r.current_strat_model();
  out.current_strat_acqf = r.current_strat_acqf();
  out.current_strat_finished = r.current_strat_finished();
  out.current_strat_can_fit = r.current_strat_can_fit();
  out.summary = from_pb(r.summary());
  return out;
}

pb::AskRequest to_pb(const AskRequest& r, std::int64_t strategy_id) {
  if (r.num_points < 1) {
    throw Error(StatusCode::kInvalidArgument, "num_points: must be at least 1, got " + std::to_string(r.num_points),
                "num_points");
  }
  pb::AskRequest out;
  out.set_strategy_id(strategy_id);
  out.set_num_points(r.num_points);
  to_pb(r.fixed, out.mutable_fixed_parameters(), "fixed_parameters");
  out.set_request_id(r.request_id);
  out.set_ttl_seconds(r.ttl_seconds);
  return out;
}

pb::TellRequest to_pb(const TellRequest& r, std::int64_t strategy_id) {
  if ((r.trial_id != 0) == !r.stimuli.empty()) {
    throw Error(StatusCode::kInvalidArgument, "tell: give either trial_id or stimuli, not both or neither",
                r.trial_id != 0 ? "stimuli" : "trial_id");
  }
  if (r.outcomes.empty()) throw Error(StatusCode::kInvalidArgument, "outcomes: at least one outcome is required", "outcomes");
  pb::TellRequest out;
  out.set_strategy_id(strategy_id);
  if (r.trial_id != 0) {
    out.set_trial_id(r.trial_id);
  } else {
    for (std::size_t i = 0; i < r.stimuli.size(); ++i) {
      to_pb(r.stimuli[i], out.mutable_stimuli()->add_stimuli()->mutable_values(), "stimuli[" + std::to_string(i) + "]");
    }
  }
  for (const auto& o : r.outcomes) {
    auto* added = out.add_outcomes();
    added->set_name(o.name);
    added->set_value(o.value);
    if (o.sem) added->set_sem(*o.sem);
  }
  if (r.model_data) out.set_model_data(*r.model_data);
  out.mutable_metadata()->insert(r.metadata.begin(), r.metadata.end());
  out.set_request_id(r.request_id);
  return out;
}

pb::QueryRequest to_pb(const QueryRequest& r, std::int64_t strategy_id) {
  pb::QueryRequest out;
  out.set_strategy_id(strategy_id);
  out.set_query_type(to_pb(r.type));
  out.set_probability_space(r.probability_space);
  for (std::size_t i = 0; i < r.x.size(); ++i) to_pb(r.x[i], out.add_x()->mutable_values(), "x[" + std::to_string(i) + "]");
  if (r.y) out.set_y(*r.y);
  to_pb(r.constraints, out.mutable_constraints(), "constraints");
  out.set_outcome(r.outcome);
  return out;
}

}  // namespace psyserve::internal
