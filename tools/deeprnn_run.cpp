// deeprnn-run: runs a model that uses the deeprnn operators on inputs saved
// from Python, prints what it returns and how long a call takes, and
// optionally writes the outputs back for Python to compare. The model is a
// TorchScript file (.pt) or an AOTInductor package (.pt2).
//
// Including <deeprnn/deeprnn.h> is what makes the operators available: its
// link anchor keeps libdeeprnn (and so its registrations) in this program;
// torch::jit::load resolves deeprnn::lstm & co. against them, and an
// AOTInductor package calls them through its proxy executor.

#include <deeprnn/deeprnn.h>

#include <ATen/Parallel.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr const char* kSynopsis =
    "usage: deeprnn-run MODEL.pt|MODEL.pt2 INPUTS.pt [--output OUT.pt]\n"
    "                   [--repeat N] [--warmup N] [--threads N] [--method NAME]\n";

constexpr const char* kHelp =
    "\n"
    "Runs a TorchScript model (torch.jit.script or torch.jit.trace, then\n"
    "torch.jit.save) or an AOTInductor package (torch.export.export, then\n"
    "torch._inductor.aoti_compile_and_package) on inputs saved with\n"
    "torch.save, prints the type, dtype and shape of every input and output\n"
    "and the median time of one call. The model runs in eval mode, without\n"
    "autograd.\n"
    "\n"
    "  MODEL.pt         the TorchScript model\n"
    "  MODEL.pt2        an AOTInductor package: it takes the input tensors\n"
    "                   flattened in order (None left out) and returns its\n"
    "                   output tensors flattened, as a tuple\n"
    "  INPUTS.pt        the arguments, saved from Python with torch.save:\n"
    "                   a tuple or a list is the argument list, e.g.\n"
    "                     torch.save((x, (h0, c0)), \"INPUTS.pt\")\n"
    "                   anything else (e.g. one tensor) is the only argument;\n"
    "                   to pass one tuple or list as the only argument, wrap\n"
    "                   it: torch.save((xs,), \"INPUTS.pt\")\n"
    "  --output OUT.pt  write what the last call returned, nested as the model\n"
    "                   returns it, for Python: torch.load(\"OUT.pt\")\n"
    "  --repeat N       timed calls, N >= 1 (default 10)\n"
    "  --warmup N       untimed calls before them, N >= 0 (default 3);\n"
    "                   TorchScript profiles and optimises in the first calls\n"
    "  --threads N      intra-op threads, N >= 1 (default: torch's choice)\n"
    "  --method NAME    the method to call (default: forward; TorchScript)\n"
    "  -h, --help       show this text\n"
    "\n"
    "Exit status: 0 on success, 1 if loading or running the model fails,\n"
    "2 for a wrong command line or an input file that cannot be read.\n";

// A problem with the command line itself: reported with the synopsis, exit 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string model_path;
  std::string inputs_path;
  std::optional<std::string> output_path;
  int64_t repeat = 10;
  int64_t warmup = 3;
  std::optional<int64_t> threads;
  std::string method = "forward";
  bool help = false;
};

int64_t parse_count(
    const std::string& flag,
    const std::string& text,
    int64_t minimum) {
  int64_t value = 0;
  size_t used = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || value < minimum) {
    throw UsageError(
        flag + " expects an integer >= " + std::to_string(minimum) + ", got '" +
        text + "'");
  }
  return value;
}

Options parse_arguments(int argc, char** argv) {
  Options options;
  std::vector<std::string> positional;
  for (int index = 1; index < argc; ++index) {
    std::string argument = argv[index];
    if (argument == "-h" || argument == "--help") {
      options.help = true;
      continue;
    }
    if (argument == "--") {
      // Everything after it is a file name, even if it starts with a dash.
      for (++index; index < argc; ++index) {
        positional.emplace_back(argv[index]);
      }
      break;
    }
    if (argument.compare(0, 2, "--") != 0) {
      if (argument.size() > 1 && argument[0] == '-') {
        throw UsageError("unknown option '" + argument + "'");
      }
      positional.push_back(argument);
      continue;
    }
    // --flag VALUE or --flag=VALUE
    std::string flag = argument;
    std::optional<std::string> value;
    const auto equals = argument.find('=');
    if (equals != std::string::npos) {
      flag = argument.substr(0, equals);
      value = argument.substr(equals + 1);
    }
    const bool known = flag == "--output" || flag == "--repeat" ||
        flag == "--warmup" || flag == "--threads" || flag == "--method";
    if (!known) {
      throw UsageError("unknown option '" + flag + "'");
    }
    if (!value) {
      if (index + 1 >= argc) {
        throw UsageError(flag + " needs a value");
      }
      value = argv[++index];
    }
    if (flag == "--output") {
      if (value->empty()) {
        throw UsageError("--output needs a file name");
      }
      options.output_path = *value;
    } else if (flag == "--repeat") {
      options.repeat = parse_count(flag, *value, 1);
    } else if (flag == "--warmup") {
      options.warmup = parse_count(flag, *value, 0);
    } else if (flag == "--threads") {
      options.threads = parse_count(flag, *value, 1);
    } else {
      if (value->empty()) {
        throw UsageError("--method needs a method name");
      }
      options.method = *value;
    }
  }
  if (options.help) {
    return options;
  }
  if (positional.size() != 2) {
    throw UsageError(
        "expected 2 arguments, MODEL.pt and INPUTS.pt, got " +
        std::to_string(positional.size()));
  }
  options.model_path = positional[0];
  options.inputs_path = positional[1];
  return options;
}

// Fails with the system's reason when `path` cannot be read, before torch
// gets to turn it into a less direct message.
void check_readable(const std::string& path, const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw UsageError(
        "cannot open " + what + " '" + path + "': " + std::strerror(errno));
  }
}

std::vector<char> read_file(const std::string& path, const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw UsageError(
        "cannot open " + what + " '" + path + "': " + std::strerror(errno));
  }
  return std::vector<char>(
      std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

// torch::jit::pickle_load gives containers with loose element types (a Python
// list becomes List[Any]), which TorchScript's argument check rejects. Rebuild
// them with the types the method's schema declares; whatever still does not
// fit is left for that check to report.
c10::IValue conform(const c10::IValue& value, const c10::TypePtr& type) {
  if (const auto optional = type->cast<c10::OptionalType>()) {
    return value.isNone() ? value : conform(value, optional->getElementType());
  }
  if (const auto list_type = type->cast<c10::ListType>()) {
    if (!value.isList() && !value.isTuple()) {
      return value;
    }
    const auto element_type = list_type->getElementType();
    c10::impl::GenericList list(element_type);
    if (value.isList()) {
      for (const c10::IValue& element : value.toListRef()) {
        list.push_back(conform(element, element_type));
      }
    } else {
      for (const c10::IValue& element : value.toTupleRef().elements()) {
        list.push_back(conform(element, element_type));
      }
    }
    return list;
  }
  if (const auto tuple_type = type->cast<c10::TupleType>()) {
    if (!value.isTuple() && !value.isList()) {
      return value;
    }
    std::vector<c10::IValue> elements;
    if (value.isTuple()) {
      const auto& source = value.toTupleRef().elements();
      elements.assign(source.begin(), source.end());
    } else {
      const auto source = value.toListRef();
      elements.assign(source.begin(), source.end());
    }
    const auto& element_types = tuple_type->elements();
    if (elements.size() != element_types.size()) {
      return value;
    }
    for (size_t index = 0; index < elements.size(); ++index) {
      elements[index] = conform(elements[index], element_types[index]);
    }
    if (tuple_type->schema()) {
      return c10::ivalue::Tuple::createNamed(std::move(elements), tuple_type);
    }
    return c10::ivalue::Tuple::create(std::move(elements));
  }
  if (const auto dict_type = type->cast<c10::DictType>()) {
    if (!value.isGenericDict()) {
      return value;
    }
    c10::impl::GenericDict dict(
        dict_type->getKeyType(), dict_type->getValueType());
    for (const auto& entry : value.toGenericDict()) {
      dict.insert(
          conform(entry.key(), dict_type->getKeyType()),
          conform(entry.value(), dict_type->getValueType()));
    }
    return dict;
  }
  return value;
}

std::string dtype_name(c10::ScalarType scalar_type) {
  // The names Python prints (float64, not Double), so that the listing reads
  // like the model's Python side.
  return std::string(c10::getDtypeNames(scalar_type).first);
}

// Prints one line per value, descending into tuples, lists and dicts:
//   output[0]: Tensor float64 [5, 3, 12]
//   output[1]: tuple of 2
//   output[1][0]: Tensor float64 [4, 3, 6]
void describe(
    std::ostream& out,
    const std::string& name,
    const c10::IValue& value) {
  if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    out << name << ": Tensor";
    if (!tensor.defined()) {
      out << " (undefined)\n";
      return;
    }
    out << " " << dtype_name(tensor.scalar_type()) << " " << tensor.sizes();
    if (!tensor.device().is_cpu()) {
      out << " on " << tensor.device();
    }
    out << "\n";
  } else if (value.isTuple()) {
    const auto& elements = value.toTupleRef().elements();
    out << name << ": tuple of " << elements.size() << "\n";
    for (size_t index = 0; index < elements.size(); ++index) {
      describe(out, name + "[" + std::to_string(index) + "]", elements[index]);
    }
  } else if (value.isList()) {
    const auto elements = value.toListRef();
    out << name << ": list of " << elements.size() << "\n";
    for (size_t index = 0; index < elements.size(); ++index) {
      describe(out, name + "[" + std::to_string(index) + "]", elements[index]);
    }
  } else if (value.isGenericDict()) {
    const auto dict = value.toGenericDict();
    out << name << ": dict of " << dict.size() << "\n";
    for (const auto& entry : dict) {
      std::ostringstream key;
      key << entry.key();
      describe(out, name + "[" + key.str() + "]", entry.value());
    }
  } else if (value.isNone()) {
    out << name << ": None\n";
  } else {
    out << name << ": " << value.tagKind() << " " << value << "\n";
  }
}

std::vector<c10::IValue> argument_list(const c10::IValue& loaded) {
  if (loaded.isTuple()) {
    const auto& elements = loaded.toTupleRef().elements();
    return std::vector<c10::IValue>(elements.begin(), elements.end());
  }
  if (loaded.isList()) {
    const auto elements = loaded.toListRef();
    return std::vector<c10::IValue>(elements.begin(), elements.end());
  }
  return {loaded};
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
      text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string first_line(const std::string& text) {
  return text.substr(0, text.find('\n'));
}

// An AOTInductor package takes its inputs as the flat list of tensors of the
// exported call's arguments (pytree order; None is not an input).
void flatten_tensors(const c10::IValue& value, std::vector<at::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isTuple()) {
    for (const auto& element : value.toTupleRef().elements()) {
      flatten_tensors(element, out);
    }
  } else if (value.isList()) {
    for (const auto& element : value.toListRef()) {
      flatten_tensors(element, out);
    }
  } else if (value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      flatten_tensors(entry.value(), out);
    }
  } else {
    TORCH_CHECK(
        value.isNone(),
        "an AOTInductor package takes tensors (in tuples, lists or dicts), "
        "got a ",
        value.tagKind());
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle]
                                : 0.5 * (values[middle - 1] + values[middle]);
}

int run(const Options& options) {
  check_readable(options.model_path, "model file");
  const std::vector<char> input_bytes =
      read_file(options.inputs_path, "input file");

  if (options.threads) {
    at::set_num_threads(static_cast<int>(*options.threads));
  }

  c10::IValue loaded;
  try {
    loaded = torch::jit::pickle_load(input_bytes);
  } catch (const c10::Error& error) {
    throw UsageError(
        "cannot read the inputs from '" + options.inputs_path +
        "'; save them from Python with torch.save, e.g. "
        "torch.save((x, h0), path): " +
        error.what_without_backtrace());
  }
  std::vector<c10::IValue> arguments = argument_list(loaded);

  // One call of the model on `arguments`, whichever kind it is.
  std::function<c10::IValue()> call_model;
  torch::jit::Module module;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;
  std::vector<at::Tensor> package_inputs;
  std::string what_runs;
  if (ends_with(options.model_path, ".pt2")) {
    if (options.method != "forward") {
      throw UsageError(
          "--method applies to TorchScript models; an AOTInductor package "
          "has one entry point");
    }
    try {
      package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          options.model_path);
    } catch (const std::exception& error) {
      throw std::runtime_error(
          "cannot load the AOTInductor package '" + options.model_path +
          "' (is it made by torch._inductor.aoti_compile_and_package?): " +
          first_line(error.what()));
    }
    for (const auto& argument : arguments) {
      flatten_tensors(argument, package_inputs);
    }
    call_model = [&package, &package_inputs]() -> c10::IValue {
      const std::vector<at::Tensor> outputs = package->run(package_inputs);
      return c10::ivalue::Tuple::create(
          std::vector<c10::IValue>(outputs.begin(), outputs.end()));
    };
    what_runs = "AOTInductor package";
  } else {
    try {
      module = torch::jit::load(options.model_path);
    } catch (const c10::Error& error) {
      throw std::runtime_error(
          "cannot load the model '" + options.model_path +
          "' (is it a TorchScript model, saved with torch.jit.save or "
          "ScriptModule.save?): " +
          error.what_without_backtrace());
    }
    module.eval();
    const auto method = module.find_method(options.method);
    if (!method) {
      throw std::runtime_error(
          "the model '" + options.model_path + "' has no method '" +
          options.method + "'");
    }
    // The schema's first argument is `self`.
    const auto& schema_arguments = method->function().getSchema().arguments();
    for (size_t index = 0;
         index < arguments.size() && index + 1 < schema_arguments.size();
         ++index) {
      arguments[index] =
          conform(arguments[index], schema_arguments[index + 1].type());
    }
    // The method is looked up once, not inside the timed calls.
    call_model = [forward = *method, &arguments]() {
      return forward(arguments);
    };
    what_runs = "method " + options.method;
  }

  std::cout << "model: " << options.model_path << " (" << what_runs << ", "
            << arguments.size() << " input"
            << (arguments.size() == 1 ? "" : "s") << ")\n";
  for (size_t index = 0; index < arguments.size(); ++index) {
    describe(
        std::cout, "input[" + std::to_string(index) + "]", arguments[index]);
  }

  torch::NoGradGuard no_grad;
  c10::IValue result;
  std::vector<double> times_ms;
  times_ms.reserve(static_cast<size_t>(options.repeat));
  for (int64_t call = 0; call < options.warmup + options.repeat; ++call) {
    const auto start = std::chrono::steady_clock::now();
    result = call_model();
    const auto stop = std::chrono::steady_clock::now();
    if (call >= options.warmup) {
      times_ms.push_back(
          std::chrono::duration<double, std::milli>(stop - start).count());
    }
  }

  if (result.isTuple()) {
    const auto& elements = result.toTupleRef().elements();
    for (size_t index = 0; index < elements.size(); ++index) {
      describe(
          std::cout, "output[" + std::to_string(index) + "]", elements[index]);
    }
  } else {
    describe(std::cout, "output", result);
  }
  std::cout << "time: median " << std::fixed << std::setprecision(3)
            << median(times_ms) << " ms over " << options.repeat << " call"
            << (options.repeat == 1 ? "" : "s") << " (" << options.warmup
            << " warmup, " << at::get_num_threads() << " thread"
            << (at::get_num_threads() == 1 ? "" : "s") << ")\n";

  if (options.output_path) {
    const std::vector<char> bytes = torch::jit::pickle_save(result);
    std::ofstream file(*options.output_path, std::ios::binary);
    if (!file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
      throw std::runtime_error(
          "cannot write the outputs to '" + *options.output_path +
          "': " + std::strerror(errno));
    }
    std::cout << "wrote: " << *options.output_path << "\n";
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse_arguments(argc, argv);
    if (options.help) {
      std::cout << kSynopsis << kHelp;
      return 0;
    }
    return run(options);
  } catch (const UsageError& error) {
    std::cerr << "deeprnn-run: error: " << error.what() << "\n"
              << kSynopsis << "(deeprnn-run --help for more)\n";
    return 2;
  } catch (const c10::Error& error) {
    std::cerr << "deeprnn-run: error: " << error.what_without_backtrace()
              << "\n";
    return 1;
  } catch (const std::exception& error) {
    std::cerr << "deeprnn-run: error: " << error.what() << "\n";
    return 1;
  }
}
