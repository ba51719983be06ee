// A catalogue of bad inputs through the C++ API: the functional operators of
// <deeprnn/ops.h> and the modules deeprnn::RNN / GRU / LSTM. Every case must
// throw a c10::Error whose message names the op or module and the argument
// and says what was expected and what came, must not crash, and must leave
// the operator or module computing exactly what it computed before.
//
// Three tables (op, module forward, module construction); each row runs for
// the modes it lists and shows up as its own test, e.g.
// BadInputOp/BadInputOpTest.Throws/input_0d_LSTM. Rows that may crash while
// deeprnn mishandles them run in a child process (a gtest death test), so
// that a crash fails that test only; rows with absurd sizes run there under an
// address-space limit, so that the allocation fails the same way whatever the
// machine's overcommit policy. tests/python/test_bad_inputs.py is the Python
// counterpart.

#include <deeprnn/deeprnn.h>

#include "test_helpers.h"

#include <torch/torch.h>

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <regex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEEPRNN_BAD_INPUT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define DEEPRNN_BAD_INPUT_SANITIZED 1
#endif
#endif

namespace {

using deeprnn_test::throws_matching;
using torch::Tensor;

constexpr int64_t kT = 5, kB = 3, kI = 4, kH = 6, kProj = 3, kL = 2, kD = 2;

// A child process gets this much address space: far beyond what a valid case
// needs, far below what an absurd size asks for.
constexpr rlim_t kChildAddressSpace = rlim_t{16} << 30;

enum class Mode { kLSTM, kGRU, kRNNTanh, kRNNReLU };
const std::vector<Mode> kAllModes = {
    Mode::kLSTM,
    Mode::kGRU,
    Mode::kRNNTanh,
    Mode::kRNNReLU};
const std::vector<Mode> kLSTMOnly = {Mode::kLSTM};
const std::vector<Mode> kSingleState = {
    Mode::kGRU,
    Mode::kRNNTanh,
    Mode::kRNNReLU};

const char* mode_id(Mode mode) {
  switch (mode) {
    case Mode::kLSTM:
      return "LSTM";
    case Mode::kGRU:
      return "GRU";
    case Mode::kRNNTanh:
      return "RNN_TANH";
    case Mode::kRNNReLU:
      return "RNN_RELU";
  }
  return "?";
}

const char* op_name(Mode mode) {
  switch (mode) {
    case Mode::kLSTM:
      return "lstm";
    case Mode::kGRU:
      return "gru";
    case Mode::kRNNTanh:
      return "rnn_tanh";
    case Mode::kRNNReLU:
      return "rnn_relu";
  }
  return "?";
}

const char* module_name(Mode mode) {
  switch (mode) {
    case Mode::kLSTM:
      return "LSTM";
    case Mode::kGRU:
      return "GRU";
    default:
      return "RNN";
  }
}

int64_t gate_count(Mode mode) {
  switch (mode) {
    case Mode::kLSTM:
      return 4;
    case Mode::kGRU:
      return 3;
    default:
      return 1;
  }
}

// Options every module kind has, for constructing any of them from a row.
struct Sizes {
  int64_t input = kI;
  int64_t hidden = kH;
  int64_t layers = kL;
  int64_t proj = 0; // LSTM only
  double dropout = 0.0;
  bool bidirectional = true;
};

// One deeprnn module of any kind behind one interface.
struct AnyRNN {
  std::shared_ptr<torch::nn::Module> module;
  // Undefined h0 and c0: no state (zeros). LSTM: a state is passed as soon
  // as either is defined.
  std::function<
      std::vector<Tensor>(const Tensor&, const Tensor&, const Tensor&)>
      forward;
  std::function<std::vector<std::string>()> names;
  // Options read by forward, to put them out of step with the parameters.
  std::function<void(int64_t)> set_num_layers;
  std::function<void(bool)> set_bias;
  std::function<void(double)> set_dropout;
  std::function<void(bool)> set_batch_first;
};

template <typename Holder>
void bind_options(AnyRNN& any, Holder holder) {
  // The shared_ptr, not the holder: a const holder gives a const module.
  auto impl = holder.ptr();
  any.module = impl;
  any.names = [impl] { return impl->flat_weights_names(); };
  any.set_num_layers = [impl](int64_t v) { impl->options.num_layers(v); };
  any.set_bias = [impl](bool v) { impl->options.bias(v); };
  any.set_dropout = [impl](double v) { impl->options.dropout(v); };
  any.set_batch_first = [impl](bool v) { impl->options.batch_first(v); };
}

AnyRNN make_module(Mode mode, const Sizes& s) {
  AnyRNN any;
  if (mode == Mode::kLSTM) {
    deeprnn::LSTM lstm(deeprnn::LSTMOptions(s.input, s.hidden)
                           .num_layers(s.layers)
                           .dropout(s.dropout)
                           .bidirectional(s.bidirectional)
                           .proj_size(s.proj));
    bind_options(any, lstm);
    any.forward = [lstm = lstm.ptr()](
                      const Tensor& x, const Tensor& h0, const Tensor& c0) {
      auto [output, state] = (h0.defined() || c0.defined())
          ? lstm->forward(x, std::make_tuple(h0, c0))
          : lstm->forward(x);
      return std::vector<Tensor>{
          output, std::get<0>(state), std::get<1>(state)};
    };
  } else if (mode == Mode::kGRU) {
    deeprnn::GRU gru(deeprnn::GRUOptions(s.input, s.hidden)
                         .num_layers(s.layers)
                         .dropout(s.dropout)
                         .bidirectional(s.bidirectional));
    bind_options(any, gru);
    any.forward = [gru = gru.ptr()](
                      const Tensor& x, const Tensor& h0, const Tensor&) {
      auto [output, hy] = gru->forward(x, h0);
      return std::vector<Tensor>{output, hy};
    };
  } else {
    deeprnn::RNNOptions options(s.input, s.hidden);
    options.num_layers(s.layers).dropout(s.dropout).bidirectional(
        s.bidirectional);
    if (mode == Mode::kRNNReLU) {
      options.nonlinearity(torch::kReLU);
    }
    deeprnn::RNN rnn(options);
    bind_options(any, rnn);
    any.forward = [rnn = rnn.ptr()](
                      const Tensor& x, const Tensor& h0, const Tensor&) {
      auto [output, hy] = rnn->forward(x, h0);
      return std::vector<Tensor>{output, hy};
    };
  }
  return any;
}

// The arguments of a public op; good() fills them with a valid call.
struct OpArgs {
  Tensor input;
  std::optional<Tensor> hx;
  std::optional<Tensor> cx;
  std::vector<Tensor> params;
  bool has_biases = true;
  int64_t num_layers = kL;
  double dropout = 0.0;
  bool train = false;
  bool bidirectional = true;
  bool batch_first = false;
};

std::vector<Tensor> run_op(Mode mode, const OpArgs& a) {
  std::tuple<Tensor, Tensor> two;
  switch (mode) {
    case Mode::kLSTM: {
      auto [output, hy, cy] = deeprnn::lstm(
          a.input,
          a.hx,
          a.cx,
          a.params,
          a.has_biases,
          a.num_layers,
          a.dropout,
          a.train,
          a.bidirectional,
          a.batch_first);
      return {output, hy, cy};
    }
    case Mode::kGRU:
      two = deeprnn::gru(
          a.input,
          a.hx,
          a.params,
          a.has_biases,
          a.num_layers,
          a.dropout,
          a.train,
          a.bidirectional,
          a.batch_first);
      break;
    case Mode::kRNNTanh:
      two = deeprnn::rnn_tanh(
          a.input,
          a.hx,
          a.params,
          a.has_biases,
          a.num_layers,
          a.dropout,
          a.train,
          a.bidirectional,
          a.batch_first);
      break;
    case Mode::kRNNReLU:
      two = deeprnn::rnn_relu(
          a.input,
          a.hx,
          a.params,
          a.has_biases,
          a.num_layers,
          a.dropout,
          a.train,
          a.bidirectional,
          a.batch_first);
      break;
  }
  return {std::get<0>(two), std::get<1>(two)};
}

Tensor rand(at::IntArrayRef shape) {
  return torch::randn(shape, torch::kDouble);
}

// One mode's setting: 2 layers, bidirectional, LSTM with projection, float64,
// parameters that require grad (the Autograd path a user takes).
struct Ctx {
  explicit Ctx(Mode m) : mode(m) {
    torch::manual_seed(2024);
    Sizes sizes;
    sizes.proj = m == Mode::kLSTM ? kProj : 0;
    module = make_module(m, sizes);
    module.module->to(torch::kDouble);
    G = gate_count(m);
    P = m == Mode::kLSTM ? kProj : kH;
    x = rand({kT, kB, kI});
    h0 = rand({kL * kD, kB, P});
    if (m == Mode::kLSTM) {
      c0 = rand({kL * kD, kB, kH});
    }
    names = module.names();
    const auto named = module.module->named_parameters(/*recurse=*/false);
    for (const auto& name : names) {
      params.push_back(named[name]);
    }
  }

  bool lstm() const {
    return mode == Mode::kLSTM;
  }

  OpArgs good() const {
    OpArgs a;
    a.input = x;
    a.hx = h0;
    if (lstm()) {
      a.cx = c0;
    }
    a.params = params;
    return a;
  }

  std::vector<Tensor> op(const std::function<void(OpArgs&)>& change) const {
    OpArgs a = good();
    change(a);
    return run_op(mode, a);
  }

  int64_t index(const std::string& name) const {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) {
        return static_cast<int64_t>(i);
      }
    }
    ADD_FAILURE() << "no parameter " << name;
    return -1;
  }

  std::vector<Tensor> replaced(const std::string& name, const Tensor& t) const {
    std::vector<Tensor> result;
    for (const auto& p : params) {
      result.push_back(p.detach());
    }
    result[index(name)] = t;
    return result;
  }

  std::vector<Tensor> forward() const {
    return module.forward(x, h0, c0);
  }

  // Fills the placeholders of a message pattern.
  std::string fmt(std::string pattern) const {
    const std::vector<std::pair<std::string, std::string>> fields = {
        {"{op}", op_name(mode)},
        {"{Mod}", module_name(mode)},
        {"{G}", std::to_string(G)},
        {"{GH}", std::to_string(G * kH)},
        {"{P}", std::to_string(P)},
        {"{DP}", std::to_string(kD * P)},
        {"{pname}", lstm() ? "proj_size" : "hidden_size"},
    };
    for (const auto& [key, value] : fields) {
      for (size_t at = pattern.find(key); at != std::string::npos;
           at = pattern.find(key, at + value.size())) {
        pattern.replace(at, key.size(), value);
      }
    }
    return pattern;
  }

  Mode mode;
  AnyRNN module;
  int64_t G = 1;
  int64_t P = kH;
  Tensor x, h0, c0;
  std::vector<std::string> names;
  std::vector<Tensor> params;
};

using Pattern = std::function<std::string(const Ctx&)>;

Pattern text(const char* pattern) {
  return [pattern](const Ctx& c) { return c.fmt(pattern); };
}

// "(a, b)" as the op prints a shape, escaped for a regex.
std::string shape_regex(const std::vector<int64_t>& sizes) {
  std::string out = "\\(";
  for (size_t i = 0; i < sizes.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(sizes[i]);
  }
  return out + (sizes.size() == 1 ? ",\\)" : "\\)");
}

// The op's message for a parameter of the wrong shape.
Pattern param_shape(
    const std::string& name,
    std::function<std::vector<int64_t>(const Ctx&)> expected,
    std::function<std::vector<int64_t>(const Ctx&)> got) {
  return [=](const Ctx& c) {
    return std::string("^deeprnn\\.") + op_name(c.mode) + ": parameter " +
        std::to_string(c.index(name)) + " \\(" + name + "\\) must have shape " +
        shape_regex(expected(c)) + ", got " + shape_regex(got(c)) + "$";
  };
}

::testing::AssertionResult all_equal(
    const std::vector<Tensor>& got,
    const std::vector<Tensor>& expected) {
  if (got.size() != expected.size()) {
    return ::testing::AssertionFailure() << "result count differs";
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (!torch::equal(got[i], expected[i])) {
      return ::testing::AssertionFailure()
          << "result " << i << " differs from the one before the bad call";
    }
  }
  return ::testing::AssertionSuccess();
}

void limit_address_space() {
  rlimit limit{};
  getrlimit(RLIMIT_AS, &limit);
  rlim_t soft = kChildAddressSpace;
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < soft) {
    soft = limit.rlim_max;
  }
  limit.rlim_cur = soft;
  setrlimit(RLIMIT_AS, &limit);
}

// Where a row runs.
enum class Where { kInProcess, kChild, kChildWithMemoryLimit };

// Runs body in a child process (the re-executed test binary, optionally with
// a bounded address space); a crash or a failed check there fails the test
// here, with the child's message.
void expect_passes_in_child(
    const std::function<::testing::AssertionResult()>& body,
    bool limit_memory) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        if (limit_memory) {
          limit_address_space();
        }
        const ::testing::AssertionResult result = body();
        std::fprintf(
            stderr, "%s\n", result ? "CHILD PASSED" : result.message());
        std::fflush(stderr);
        std::_Exit(result ? 0 : 1);
      },
      ::testing::ExitedWithCode(0),
      "CHILD PASSED");
}

void run_row(
    Where where,
    const std::function<::testing::AssertionResult()>& body) {
  if (where == Where::kInProcess) {
    EXPECT_TRUE(body());
    return;
  }
#ifdef DEEPRNN_BAD_INPUT_SANITIZED
  if (where == Where::kChildWithMemoryLimit) {
    GTEST_SKIP() << "a sanitizer runtime reserves terabytes of shadow memory, "
                    "so it cannot run under the address-space limit that "
                    "makes this absurd allocation fail cleanly";
  }
#endif
  expect_passes_in_child(body, where == Where::kChildWithMemoryLimit);
}

// ---------------------------------------------------------------------------
// The operators.

struct OpCase {
  std::string id;
  std::vector<Mode> modes;
  std::function<void(const Ctx&)> run; // the bad call
  Pattern pattern; // searched in the message
  Where where = Where::kInProcess;
};

std::vector<Tensor> without_projection(const Ctx& c) {
  std::vector<Tensor> result;
  for (size_t i = 0; i < c.params.size(); ++i) {
    if (c.names[i].rfind("weight_hr", 0) != 0) {
      result.push_back(c.params[i].detach());
    }
  }
  return result;
}

OpArgs converted(const Ctx& c, at::ScalarType type) {
  OpArgs a = c.good();
  // Scaled so that an integer conversion keeps some information.
  const auto to = [type](const Tensor& t) { return (t * 10).to(type); };
  a.input = to(c.x);
  a.hx = to(c.h0);
  if (c.lstm()) {
    a.cx = to(c.c0);
  }
  for (auto& p : a.params) {
    p = to(p.detach());
  }
  return a;
}

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = {
      // --- undefined tensors (a C++ caller can pass them)
      {"input_undefined",
       kAllModes,
       [](const Ctx& c) { c.op([](OpArgs& a) { a.input = Tensor(); }); },
       text("^deeprnn\\.{op}: input is undefined$")},
      {"input_undefined_batch_first_autograd",
       kAllModes,
       [](const Ctx& c) {
         c.op([](OpArgs& a) {
           a.input = Tensor();
           a.batch_first = true;
         });
       },
       text("^deeprnn\\.{op}: input is undefined$")},
      {"param_undefined",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) { a.params = c.replaced("weight_hh_l1", {}); });
       },
       [](const Ctx& c) {
         return c.fmt("^deeprnn\\.{op}: parameter ") +
             std::to_string(c.index("weight_hh_l1")) +
             " \\(weight_hh_l1\\) is undefined$";
       }},
      {"first_param_undefined",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) { a.params = c.replaced("weight_ih_l0", {}); });
       },
       text("^deeprnn\\.{op}: parameter 0 \\(weight_ih_l0\\) is undefined$")},
      // --- ranks
      {"input_0d",
       kAllModes,
       [](const Ctx& c) { c.op([&](OpArgs& a) { a.input = c.x[0][0][0]; }); },
       text("^deeprnn\\.{op}: expected 3-D input \\(seq_len, batch, "
            "input_size\\), got a 0-D tensor of shape \\(\\)$")},
      {"input_1d_batch_first_autograd",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) {
           a.input = c.x[0][0];
           a.batch_first = true;
         });
       },
       text("^deeprnn\\.{op}: expected 3-D input \\(batch, seq_len, "
            "input_size\\), got a 1-D tensor of shape \\(4,\\)$")},
      {"input_4d_batch_first_autograd",
       kAllModes,
       [](const Ctx& c) {
         c.op([](OpArgs& a) {
           a.input = rand({kB, kT, kI, 2});
           a.batch_first = true;
         });
       },
       text("^deeprnn\\.{op}: expected 3-D input \\(batch, seq_len, "
            "input_size\\), got a 4-D tensor of shape \\(3, 5, 4, 2\\)$")},
      {"hx_2d",
       kAllModes,
       [](const Ctx& c) { c.op([&](OpArgs& a) { a.hx = c.h0[0]; }); },
       text("^deeprnn\\.{op}: hx must have shape \\(4, 3, {P}\\) = "
            "\\(num_layers\\*num_directions, batch, {pname}\\), got "
            "\\(3, {P}\\)$")},
      {"hx_4d",
       kAllModes,
       [](const Ctx& c) { c.op([&](OpArgs& a) { a.hx = c.h0.unsqueeze(0); }); },
       text("^deeprnn\\.{op}: hx must have shape \\(4, 3, {P}\\) = "
            "\\(num_layers\\*num_directions, batch, {pname}\\), got "
            "\\(1, 4, 3, {P}\\)$")},
      {"weight_ih_1d",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) {
           a.params = c.replaced("weight_ih_l0", rand({c.G * kH}));
         });
       },
       text("^deeprnn\\.{op}: parameter 0 \\(weight_ih_l0\\) must be a 2-D "
            "tensor of shape \\({G}\\*hidden_size, input_size\\), got "
            "\\({GH},\\)$")},
      {"bias_2d",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) {
           a.params = c.replaced("bias_hh_l1_reverse", rand({c.G * kH, 1}));
         });
       },
       param_shape(
           "bias_hh_l1_reverse",
           [](const Ctx& c) { return std::vector<int64_t>{c.G * kH}; },
           [](const Ctx& c) {
             return std::vector<int64_t>{c.G * kH, 1};
           })},
      // --- sizes
      {"seq_len_0",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) { a.input = c.x.slice(0, 0, 0); });
       },
       text("^deeprnn\\.{op}: input must have at least one time step, got "
            "seq_len 0 \\(input shape \\(0, 3, 4\\)\\)$")},
      {"input_features_7",
       kAllModes,
       [](const Ctx& c) {
         c.op([](OpArgs& a) { a.input = rand({kT, kB, kI + 3}); });
       },
       text("^deeprnn\\.{op}: input.size\\(-1\\) must be equal to input_size 4 "
            "\\(the width of weight_ih_l0\\), got 7$")},
      {"cx_hidden_plus_1",
       kLSTMOnly,
       [](const Ctx& c) {
         c.op([](OpArgs& a) { a.cx = rand({kL * kD, kB, kH + 1}); });
       },
       text("^deeprnn\\.lstm: cx must have shape \\(4, 3, 6\\) = "
            "\\(num_layers\\*num_directions, batch, hidden_size\\), got "
            "\\(4, 3, 7\\)$")},
      {"weight_ih_l1_width",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) {
           a.params =
               c.replaced("weight_ih_l1", rand({c.G * kH, kD * c.P + 1}));
         });
       },
       param_shape(
           "weight_ih_l1",
           [](const Ctx& c) {
             return std::vector<int64_t>{c.G * kH, kD * c.P};
           },
           [](const Ctx& c) {
             return std::vector<int64_t>{c.G * kH, kD * c.P + 1};
           })},
      {"weight_hr_width",
       kLSTMOnly,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) {
           a.params = c.replaced("weight_hr_l0", rand({kProj, kH + 1}));
         });
       },
       text("^deeprnn\\.lstm: parameter 4 \\(weight_hr_l0\\) must be a 2-D "
            "tensor of shape \\(proj_size, 6\\), got \\(3, 7\\)$")},
      {"weight_hr_all_missing",
       kLSTMOnly,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) { a.params = without_projection(c); });
       },
       text("^deeprnn\\.lstm: parameter 1 \\(weight_hh_l0\\) must have shape "
            "\\(24, 6\\), got \\(24, 3\\)$")},
      {"params_empty",
       kAllModes,
       [](const Ctx& c) { c.op([](OpArgs& a) { a.params.clear(); }); },
       text("^deeprnn\\.{op}: expected 16 parameter tensors .*got 0$")},
      // --- dtypes
      {"all_complex",
       kAllModes,
       [](const Ctx& c) { run_op(c.mode, converted(c, at::kComplexDouble)); },
       text("^deeprnn\\.{op}: input must be a floating point tensor \\(float, "
            "double, bfloat16 or half\\), got ComplexDouble$")},
      {"all_int32",
       kAllModes,
       [](const Ctx& c) { run_op(c.mode, converted(c, at::kInt)); },
       text("^deeprnn\\.{op}: input must be a floating point tensor \\(float, "
            "double, bfloat16 or half\\), got Int$")},
      {"hx_float32",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) { a.hx = c.h0.to(at::kFloat); });
       },
       text("^deeprnn\\.{op}: hx must have the dtype of input \\(double\\), "
            "got float$")},
      {"cx_float32",
       kLSTMOnly,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) { a.cx = c.c0.to(at::kFloat); });
       },
       text("^deeprnn\\.lstm: cx must have the dtype of input \\(double\\), "
            "got float$")},
      // --- devices ('meta' stands for another device)
      {"input_on_meta",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) { a.input = c.x.to(at::kMeta); });
       },
       text("^deeprnn\\.{op}: all parameters must be on the device of input "
            "\\(meta\\), got cpu for parameter 0 \\(weight_ih_l0\\)$")},
      {"hx_on_meta",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) { a.hx = c.h0.to(at::kMeta); });
       },
       text("^deeprnn\\.{op}: hx must be on the device of input \\(cpu\\), "
            "got meta$")},
      {"param_on_meta",
       kAllModes,
       [](const Ctx& c) {
         c.op([&](OpArgs& a) {
           a.params = c.replaced("bias_ih_l0", rand({c.G * kH}).to(at::kMeta));
         });
       },
       text("^deeprnn\\.{op}: all parameters must be on the device of input "
            "\\(cpu\\), got meta for parameter 2 \\(bias_ih_l0\\)$")},
      // --- options
      {"num_layers_minus_1",
       kAllModes,
       [](const Ctx& c) { c.op([](OpArgs& a) { a.num_layers = -1; }); },
       text("^deeprnn\\.{op}: num_layers must be >= 1, got -1$")},
      {"dropout_nan",
       kAllModes,
       [](const Ctx& c) {
         c.op([](OpArgs& a) {
           a.dropout = std::numeric_limits<double>::quiet_NaN();
           a.train = true;
         });
       },
       text("^deeprnn\\.{op}: dropout must be in \\[0, 1\\], got nan$")},
      {"dropout_minus_0_1",
       kAllModes,
       [](const Ctx& c) { c.op([](OpArgs& a) { a.dropout = -0.1; }); },
       text("^deeprnn\\.{op}: dropout must be in \\[0, 1\\], got -0.1$")},
      // num_layers * num_directions * 4 wraps around to 0 in int64, which an
      // empty parameter list then matches.
      {"num_layers_2_pow_62_empty_params",
       {Mode::kLSTM, Mode::kGRU},
       [](const Ctx& c) {
         c.op([](OpArgs& a) {
           // Released, not cleared: a list that looks empty and is.
           std::vector<Tensor>().swap(a.params);
           a.num_layers = int64_t{1} << 62;
         });
       },
       text("^deeprnn\\.{op}: .*(num_layers|parameter tensors)"),
       Where::kChild},
      // 2**40 (step, batch) positions in a stride-0 view: no memory for the
      // input, none to be had for the output.
      {"expanded_input_2_pow_40_positions",
       {Mode::kLSTM, Mode::kGRU},
       [](const Ctx& c) {
         c.op([](OpArgs& a) {
           a.input = rand({1, 1, kI}).expand({1 << 20, 1 << 20, kI});
           a.hx = std::nullopt;
           a.cx = std::nullopt;
         });
       },
       text("allocate|[Oo]verflow"),
       Where::kChildWithMemoryLimit},
      // --- reserve_size (public C++ API)
      {"reserve_size_overflows_int64",
       kAllModes,
       [](const Ctx& c) {
         const int64_t big = int64_t{1} << 40;
         deeprnn::reserve_size(
             op_name(c.mode), big, big, kI, big, 0, 1, false, false);
       },
       text("^deeprnn\\.reserve_size: .*overflow")},
      {"reserve_size_unknown_mode",
       kAllModes,
       [](const Ctx& c) {
         deeprnn::reserve_size(
             module_name(c.mode), kT, kB, kI, kH, 0, 1, false, false);
       },
       text("^deeprnn: unknown mode '{Mod}', expected one of 'lstm', 'gru', "
            "'rnn_tanh', 'rnn_relu'$")},
      {"reserve_size_negative_seq_len",
       kAllModes,
       [](const Ctx& c) {
         deeprnn::reserve_size(
             op_name(c.mode), -1, kB, kI, kH, 0, 1, false, false);
       },
       text("^deeprnn\\.reserve_size: expected seq_len >= 0.*got seq_len -1,")},
  };
  return cases;
}

::testing::AssertionResult check_op_case(const OpCase& k, Mode mode) {
  const Ctx c(mode);
  const std::vector<Tensor> before = run_op(mode, c.good());
  auto thrown = throws_matching([&] { k.run(c); }, k.pattern(c));
  if (!thrown) {
    return thrown;
  }
  return all_equal(run_op(mode, c.good()), before);
}

struct CaseParam {
  size_t index;
  Mode mode;
};

// For gtest's messages (the default prints the raw bytes).
void PrintTo(const CaseParam& param, std::ostream* os) {
  *os << "case " << param.index << ", " << mode_id(param.mode);
}

template <typename Case>
std::vector<CaseParam> params_of(const std::vector<Case>& cases) {
  std::vector<CaseParam> result;
  for (size_t i = 0; i < cases.size(); ++i) {
    for (const Mode mode : cases[i].modes) {
      result.push_back({i, mode});
    }
  }
  return result;
}

class BadInputOpTest : public ::testing::TestWithParam<CaseParam> {};

TEST_P(BadInputOpTest, Throws) {
  const OpCase& k = op_cases()[GetParam().index];
  const Mode mode = GetParam().mode;
  run_row(k.where, [&] { return check_op_case(k, mode); });
}

INSTANTIATE_TEST_SUITE_P(
    BadInputOp,
    BadInputOpTest,
    ::testing::ValuesIn(params_of(op_cases())),
    [](const ::testing::TestParamInfo<CaseParam>& info) {
      return op_cases()[info.param.index].id + "_" + mode_id(info.param.mode);
    });

// ---------------------------------------------------------------------------
// Module forward.

struct ModuleCase {
  std::string id;
  std::vector<Mode> modes;
  std::function<void(Ctx&)> run; // the bad forward
  Pattern pattern;
  // Changes the module before the call; returns what undoes it.
  std::function<std::function<void()>(Ctx&)> mutate = nullptr;
};

// Swaps a parameter's data (shape, dtype) in place, as a bad checkpoint or a
// user's surgery would.
std::function<std::function<void()>(Ctx&)> swap_param(
    const std::string& name,
    std::function<Tensor(const Tensor&)> make) {
  return [=](Ctx& c) {
    Tensor param = c.module.module->named_parameters(false)[name];
    const Tensor old = param.data();
    torch::NoGradGuard no_grad;
    param.set_data(make(old));
    return std::function<void()>([param, old]() mutable {
      torch::NoGradGuard guard;
      param.set_data(old);
    });
  };
}

void forward_with(Ctx& c, const Tensor& x, const Tensor& h0, const Tensor& c0) {
  c.module.forward(x, h0, c.lstm() ? c0 : Tensor());
}

const std::vector<ModuleCase>& module_cases() {
  static const std::vector<ModuleCase> cases = {
      {"input_undefined",
       kAllModes,
       [](Ctx& c) { forward_with(c, Tensor(), Tensor(), Tensor()); },
       text("^deeprnn::{Mod}: input is undefined$")},
      {"input_0d",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x[0][0][0], Tensor(), Tensor()); },
       text("^deeprnn::{Mod}: expected 2-D \\(unbatched\\) or 3-D "
            "\\(batched\\) input, got a 0-D tensor$")},
      {"input_5d",
       kAllModes,
       [](Ctx& c) {
         forward_with(c, c.x.view({1, 1, kT, kB, kI}), Tensor(), Tensor());
       },
       text("^deeprnn::{Mod}: expected 2-D \\(unbatched\\) or 3-D "
            "\\(batched\\) input, got a 5-D tensor$")},
      {"hx_4d",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, c.h0.unsqueeze(0), c.c0); },
       text("^deeprnn::{Mod}: for batched 3-D input, (hx|h_0) must be 3-D, "
            "got a 4-D tensor$")},
      {"unbatched_input_hx_1d",
       kAllModes,
       [](Ctx& c) {
         forward_with(
             c,
             c.x.select(1, 0),
             c.h0.select(1, 0)[0],
             c.c0.defined() ? c.c0.select(1, 0) : Tensor());
       },
       text("^deeprnn::{Mod}: for unbatched 2-D input, (hx|h_0) must be 2-D, "
            "got a 1-D tensor$")},
      {"unbatched_input_c0_3d",
       kLSTMOnly,
       [](Ctx& c) {
         forward_with(c, c.x.select(1, 0), c.h0.select(1, 0), c.c0);
       },
       text("^deeprnn::LSTM: for unbatched 2-D input, c_0 must be 2-D, got a "
            "3-D tensor$")},
      {"lstm_h0_undefined",
       kLSTMOnly,
       [](Ctx& c) { forward_with(c, c.x, Tensor(), c.c0); },
       text("^deeprnn::LSTM: the initial state \\(h_0, c_0\\) must hold two "
            "defined tensors")},
      {"hx_batch_is_seq_len_with_batch_first",
       kAllModes,
       [](Ctx& c) {
         forward_with(
             c,
             c.x.transpose(0, 1),
             rand({kL * kD, kT, c.P}),
             rand({kL * kD, kT, kH}));
       },
       text("^deeprnn\\.{op}: hx must have shape \\(4, 3, {P}\\) = "
            "\\(num_layers\\*num_directions, batch, {pname}\\), got "
            "\\(4, 5, {P}\\)$"),
       [](Ctx& c) {
         c.module.set_batch_first(true);
         return std::function<void()>(
             [&c] { c.module.set_batch_first(false); });
       }},
      {"hx_float32",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, c.h0.to(at::kFloat), c.c0); },
       text("^deeprnn\\.{op}: hx must have the dtype of input \\(double\\), "
            "got float$")},
      {"input_int64",
       kAllModes,
       [](Ctx& c) {
         forward_with(c, (c.x * 10).to(at::kLong), Tensor(), Tensor());
       },
       text("^deeprnn\\.{op}: input must be a floating point tensor \\(float, "
            "double, bfloat16 or half\\), got Long$")},
      {"input_complex",
       kAllModes,
       [](Ctx& c) {
         forward_with(c, c.x.to(at::kComplexDouble), Tensor(), Tensor());
       },
       text("^deeprnn\\.{op}: input must be a floating point tensor \\(float, "
            "double, bfloat16 or half\\), got ComplexDouble$")},
      {"input_on_meta",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x.to(at::kMeta), Tensor(), Tensor()); },
       text("^deeprnn\\.{op}: all parameters must be on the device of input "
            "\\(meta\\), got cpu for parameter 0 \\(weight_ih_l0\\)$")},
      {"hx_on_meta",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, c.h0.to(at::kMeta), c.c0); },
       text("^deeprnn\\.{op}: hx must be on the device of input \\(cpu\\), "
            "got meta$")},
      {"seq_len_0",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x.slice(0, 0, 0), Tensor(), Tensor()); },
       text("^deeprnn\\.{op}: input must have at least one time step, got "
            "seq_len 0")},
      {"seq_len_0_unbatched",
       kAllModes,
       [](Ctx& c) {
         forward_with(c, c.x.select(1, 0).slice(0, 0, 0), Tensor(), Tensor());
       },
       text("^deeprnn\\.{op}: input must have at least one time step, got "
            "seq_len 0")},
      {"param_float32",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, Tensor(), Tensor()); },
       [](const Ctx& c) {
         return c.fmt(
                    "^deeprnn\\.{op}: all parameters must have the dtype of "
                    "input \\(double\\), got float for parameter ") +
             std::to_string(c.index("weight_hh_l1")) + " \\(weight_hh_l1\\)$";
       },
       swap_param(
           "weight_hh_l1",
           [](const Tensor& old) { return old.to(at::kFloat); })},
      {"weight_ih_l1_width",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, Tensor(), Tensor()); },
       param_shape(
           "weight_ih_l1",
           [](const Ctx& c) {
             return std::vector<int64_t>{c.G * kH, kD * c.P};
           },
           [](const Ctx& c) {
             return std::vector<int64_t>{c.G * kH, kD * c.P + 2};
           }),
       swap_param(
           "weight_ih_l1",
           [](const Tensor& old) {
             return rand({old.size(0), old.size(1) + 2});
           })},
      {"bias_hh_l0_2d",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, Tensor(), Tensor()); },
       param_shape(
           "bias_hh_l0",
           [](const Ctx& c) { return std::vector<int64_t>{c.G * kH}; },
           [](const Ctx& c) {
             return std::vector<int64_t>{c.G * kH, 1};
           }),
       swap_param(
           "bias_hh_l0", [](const Tensor& old) { return old.unsqueeze(1); })},
      {"weight_hr_l1_reverse_width",
       kLSTMOnly,
       [](Ctx& c) { forward_with(c, c.x, Tensor(), Tensor()); },
       param_shape(
           "weight_hr_l1_reverse",
           [](const Ctx&) {
             return std::vector<int64_t>{kProj, kH};
           },
           [](const Ctx&) {
             return std::vector<int64_t>{kProj, kH - 1};
           }),
       swap_param(
           "weight_hr_l1_reverse",
           [](const Tensor&) {
             return rand({kProj, kH - 1});
           })},
      // Options changed after construction, out of step with the parameters.
      {"options_num_layers_3",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, Tensor(), Tensor()); },
       text("^deeprnn\\.{op}: expected 24 parameter tensors .*got (20|16)$"),
       [](Ctx& c) {
         c.module.set_num_layers(3);
         return std::function<void()>([&c] { c.module.set_num_layers(kL); });
       }},
      {"options_bias_false",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, Tensor(), Tensor()); },
       text("^deeprnn\\.{op}: expected 8 parameter tensors .*got (20|16)$"),
       [](Ctx& c) {
         c.module.set_bias(false);
         return std::function<void()>([&c] { c.module.set_bias(true); });
       }},
      {"options_dropout_nan",
       kAllModes,
       [](Ctx& c) { forward_with(c, c.x, Tensor(), Tensor()); },
       text("^deeprnn\\.{op}: dropout must be in \\[0, 1\\], got nan$"),
       [](Ctx& c) {
         c.module.set_dropout(std::numeric_limits<double>::quiet_NaN());
         return std::function<void()>([&c] { c.module.set_dropout(0.0); });
       }},
  };
  return cases;
}

class BadInputModuleTest : public ::testing::TestWithParam<CaseParam> {};

TEST_P(BadInputModuleTest, Throws) {
  const ModuleCase& k = module_cases()[GetParam().index];
  Ctx c(GetParam().mode);
  const std::vector<Tensor> before = c.forward();
  std::function<void()> undo = k.mutate ? k.mutate(c) : std::function<void()>();
  EXPECT_TRUE(throws_matching([&] { k.run(c); }, k.pattern(c)));
  if (undo) {
    undo();
  }
  EXPECT_TRUE(all_equal(c.forward(), before));
}

INSTANTIATE_TEST_SUITE_P(
    BadInputModule,
    BadInputModuleTest,
    ::testing::ValuesIn(params_of(module_cases())),
    [](const ::testing::TestParamInfo<CaseParam>& info) {
      return module_cases()[info.param.index].id + "_" +
          mode_id(info.param.mode);
    });

// ---------------------------------------------------------------------------
// Module construction.

struct CtorCase {
  std::string id;
  std::vector<Mode> modes;
  Sizes sizes;
  const char* pattern; // {Mod} is the module's name
  Where where = Where::kInProcess;
};

Sizes with(std::function<void(Sizes&)> change) {
  Sizes s;
  change(s);
  return s;
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t k2Pow40 = int64_t{1} << 40;
constexpr int64_t k2Pow62 = int64_t{1} << 62;
// An allocator error, or a message naming the size that cannot be: both are
// clear; a crash, a hang or a module built anyway are not.
constexpr const char* kAbsurd =
    "allocate|[Oo]verflow|deeprnn::{Mod}: .*(hidden_size|input_size)";

const std::vector<CtorCase>& ctor_cases() {
  static const std::vector<CtorCase> cases = {
      {"input_size_minus_1",
       kAllModes,
       with([](Sizes& s) { s.input = -1; }),
       "^deeprnn::{Mod}: input_size must be >= 0, got -1$"},
      {"hidden_size_minus_5",
       kAllModes,
       with([](Sizes& s) { s.hidden = -5; }),
       "^deeprnn::{Mod}: hidden_size must be > 0, got -5$"},
      {"num_layers_minus_1",
       kAllModes,
       with([](Sizes& s) { s.layers = -1; }),
       "^deeprnn::{Mod}: num_layers must be >= 1, got -1$"},
      {"dropout_nan",
       kAllModes,
       with([](Sizes& s) { s.dropout = kNaN; }),
       "^deeprnn::{Mod}: dropout must be in \\[0, 1\\], got nan$"},
      {"dropout_inf",
       kAllModes,
       with([](Sizes& s) { s.dropout = kInf; }),
       "^deeprnn::{Mod}: dropout must be in \\[0, 1\\], got inf$"},
      {"proj_size_above_hidden",
       kLSTMOnly,
       with([](Sizes& s) { s.proj = kH + 3; }),
       "^deeprnn::LSTM: proj_size must be >= 0 and smaller than hidden_size "
       "\\(6\\), got 9$"},
      {"proj_size_minus_2",
       kLSTMOnly,
       with([](Sizes& s) { s.proj = -2; }),
       "^deeprnn::LSTM: proj_size must be >= 0 and smaller than hidden_size "
       "\\(6\\), got -2$"},
      {"hidden_size_2_pow_40",
       kAllModes,
       with([](Sizes& s) { s.hidden = k2Pow40; }),
       kAbsurd,
       Where::kChildWithMemoryLimit},
      {"input_size_2_pow_40",
       kAllModes,
       with([](Sizes& s) { s.input = k2Pow40; }),
       kAbsurd,
       Where::kChildWithMemoryLimit},
      // gate_count * hidden_size overflows int64 (to 0 for LSTM).
      {"hidden_size_2_pow_62",
       kAllModes,
       with([](Sizes& s) { s.hidden = k2Pow62; }),
       kAbsurd,
       Where::kChildWithMemoryLimit},
      {"input_size_2_pow_62",
       kAllModes,
       with([](Sizes& s) { s.input = k2Pow62; }),
       kAbsurd,
       Where::kChildWithMemoryLimit},
  };
  return cases;
}

std::string module_pattern(const char* pattern, Mode mode) {
  std::string result = pattern;
  const std::string key = "{Mod}";
  for (size_t at = result.find(key); at != std::string::npos;
       at = result.find(key)) {
    result.replace(at, key.size(), module_name(mode));
  }
  return result;
}

class BadInputCtorTest : public ::testing::TestWithParam<CaseParam> {};

TEST_P(BadInputCtorTest, Throws) {
  const CtorCase& k = ctor_cases()[GetParam().index];
  const Mode mode = GetParam().mode;
  const auto check = [&] {
    return throws_matching(
        [&] { make_module(mode, k.sizes); }, module_pattern(k.pattern, mode));
  };
  run_row(k.where, check);
}

INSTANTIATE_TEST_SUITE_P(
    BadInputCtor,
    BadInputCtorTest,
    ::testing::ValuesIn(params_of(ctor_cases())),
    [](const ::testing::TestParamInfo<CaseParam>& info) {
      return ctor_cases()[info.param.index].id + "_" + mode_id(info.param.mode);
    });

TEST(BadInputCatalogue, IdsAreUniqueAndTheCatalogueIsLarge) {
  std::vector<std::string> ids;
  for (const auto& k : op_cases()) {
    ids.push_back("op/" + k.id);
  }
  for (const auto& k : module_cases()) {
    ids.push_back("module/" + k.id);
  }
  for (const auto& k : ctor_cases()) {
    ids.push_back("ctor/" + k.id);
  }
  std::vector<std::string> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
  EXPECT_GE(ids.size(), 30u);
}

} // namespace
